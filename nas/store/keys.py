"""Every attribute name a search writes into Optuna, beside the trial record's own fields.

A trial's user attributes are the fields of :class:`~nas.store.record.TrialRecord` (their names are
the field names). What does not fit there, because it is large, structured or read by Optuna and
optuna-dashboard themselves, is a system attribute named here. Changing a name orphans every study
written before: these are part of the study format.
"""

# ---------------------------------------------------------------- a trial's system attributes
SPEC_ATTR = "nas:spec"  # the full candidate (architecture and recipe) as trained
KEY_ATTR = "nas:key"  # the candidate's key: equal keys are the same network and recipe
CURVE_ATTR = "nas:curve"  # [[epoch, val_acc], ...] where Optuna keeps none (several objectives)
BEAT_ATTR = "nas:beat"  # the worker's heartbeat: {"t": time, "host", "pid", "epoch": e, "of": E}
FIXED_PARAMS_ATTR = "fixed_params"  # Optuna's own: an enqueued trial's parameters
CONSTRAINTS_ATTR = "constraints"  # the older attribute optuna-dashboard reads feasibility from

# ---------------------------------------------------------------- a study's attributes
SETTINGS_ATTR = "nas"  # user attribute of the main study: its StudySettings
SPACE_ATTR = "nas:space"  # system attribute of the main study: the space file's text
RUNS_ATTR = "nas:runs"  # system attribute of the main study: the run log, one record per nas-search run
RUNG_ATTR = "rung"  # user attribute of a screening rung's study: which search and rung it is
