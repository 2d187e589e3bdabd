"""The MLflow view of a lineage (`tracking:` in the config): an experiment per root, a run per
generation (params, step curves from the Ray Train workers' reports, every eval of the gate, the
decision, the eval report, meta and trials as artifacts, the model as a LoggedModel), a sweep's
trials as nested runs, registered versions with the aliases champion and candidate, and
`evo tracking sync`, which rebuilds all of it from the root's files.

`files` (no MLflow import: the training workers use it) is what tracking keeps under the root;
`view` makes each part of the MLflow view match the root; `live` is what the driver, the decisions
module and the A/B round call. evo's own ledger and registry stay the record; MLflow only shows them.
"""
