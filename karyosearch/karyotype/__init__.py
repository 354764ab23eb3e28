"""Whole-cell karyotyping: name all chromosomes of one metaphase at once and read the karyotype.

A cell's crops are scored independently by the encoder; this module turns the scores into
calibrated log-probabilities and then assigns every crop jointly under each karyotype
hypothesis, so that two crops cannot both take the one free slot of a class.

- Per-crop log-probabilities: `log_softmax(scores / T)`, T fitted on validation crops by
  minimising the negative log-likelihood (`fit_temperature`).
- Size (optional, with each crop's chromosome area): the encoder sees every crop filling its
  frame, so it cannot tell a long chromosome from a short one; within one metaphase it can be
  told. A crop's relative size is log(area) - median log(area) of its cell (`relative_sizes`,
  free of the cell's condensation and the scanner's scale); a Gaussian per class, fitted on
  training cells (`fit_size_model`), gives log p(size | class), and the log-probabilities
  become `log_softmax(scores / T + size_weight * log p(size | class))`, with T and the weight
  fitted together on validation crops (`fit_size_weight`).
- Hypotheses (`hypotheses`): 46,XX and 46,XY; 47,XX,+n and 47,XY,+n for every autosome n;
  45,X; 47,XXY; 47,XXX; 47,XYY; 48,XXYY. Each is an expected count per class, i.e. a set of
  slots.
- Assignment (`assign`): minimum-cost matching of crops to slots
  (`scipy.optimize.linear_sum_assignment` on -log p). Up to `max_missing` slots may stay
  empty (a crop that was not cut out) at `missing_cost` each, and up to `max_extra` crops may
  be left over as debris at `extra_cost` each.
- Decision: hypothesis cost = assignment cost + penalty of its kind (0 for the normal
  karyotypes; fitted for `trisomy`, `sex_gain` and `monosomy_x` by `fit_penalty` on normal
  training cells and abnormalities simulated from them, together with the debris cost: a
  cheap debris slot lets 46,XX swallow the third 21 of a trisomy). The cheapest hypothesis
  wins.
- Homologues (optional, with the crops' embeddings): the crops of one class in one cell are
  homologues, and homologues of one metaphase look alike (same banding, same condensation).
  Each hypothesis' assignment earns `homologue_weight` x sum over crop pairs given the same
  class of (cosine - `homologue_threshold`), so a hypothesis that puts a look-alike of another
  class beside a class's homologues (the third 18 called a second Y: 47,XYY for 47,XY,+18)
  pays for it. The weight is fitted with the penalties and chosen on held-out cells (0 turns
  it off).

Counts alone cannot tell 45,X from a 46,XX or 46,XY cell whose missing crop is a sex
chromosome: the penalty of 45,X against `missing_cost` is the prior that decides it. Missing
crops are simulated from autosomes only, as in the G-band set, where every 45-crop normal
cell misses an autosome.

Modules, in the order the data flows:

- `calibrate`: temperature and size weight, fitted on validation crops; `cell_log_probs`.
- `params`: `KaryotypeParams`, saved beside the model as <model>.karyotype.json and refused
  when fitted for another encoder.
- `assign`: the joint assignment of a cell's crops to each hypothesis' slots.
- `report`: `karyotype_scores`, a cell's karyotype from its crops' scores (pure; no files).
- `simulate`, `penalty`: abnormal cells simulated from normal ones, and the penalties and
  debris cost fitted on them; `fit`: the whole fit from a labelled dataset and an encoder
  (`karyosearch karyotype fit`).
- `cells`: cell folders and the encoder: `karyotype_folder` (one cell), `karyotype_cells`
  (a folder of cells), `run_karyotype` (the `karyotype` command); `karyogram`: the PNG.

The karyotypes themselves (ISCN strings, hypotheses) are in `karyosearch.cytogenetics`, the
relative sizes in `karyosearch.sizes`, the `karyo` split in `karyosearch.data.splits`.
"""
