# Helpers of the results scripts (sourced: . "$HERE/../common.sh").

# restore_runs FROM OUT: put the finished `dora study` runs committed in FROM/runs back into OUT/runs (result.json
# and config.json), where the study skips them instead of training them again.
restore_runs() {
  local done name
  mkdir -p "$2/runs"
  for done in "$1"/runs/*/result.json; do
    [ -e "$done" ] || continue  # none committed yet
    name=$(basename "$(dirname "$done")")
    mkdir -p "$2/runs/$name" && cp -n "$done" "$(dirname "$done")/config.json" "$2/runs/$name/"
  done
}

# study_data DIR [RECIPE]: the study's data in DIR/data, made once (deterministic: the same video, shards, labelled
# sets and truth on every machine), before any two processes both try to make it; sized from RECIPE's crop (JSON).
study_data() {
  python -c "import json, sys; from pathlib import Path; from dora.study import StudyConfig, prepare_data; prepare_data(StudyConfig(out=Path(sys.argv[1]), recipe=json.loads(sys.argv[2])))" "$1" "${2:-"{}"}"
}
