"""The study layer: TD-MPC glue and the comparison study built on the model-agnostic core.

It depends on both ``tdmpc`` and the core of ``pruning``; the core never imports it.

| module | what it holds |
|---|---|
| ``integration`` | the tracker and pruning-during-training attached to ``tdmpc.trainer.Trainer`` |
| ``cost_model`` | the planned-action / policy-action cost of a TD-MPC world model (FLOPs rows, latency) |
| ``prune_job`` | ``scripts/prune.py``: prune a checkpoint, fine-tune, evaluate, measure, ``result.json`` |
| ``prune_config`` / ``prune_cli`` / ``prune_dir`` | the prune job's settings, command line and claimed run dir |
| ``sweep`` | Hydra helpers of prune sweeps (the ``run_tag`` resolver, ``CheckpointTagCheck``; the failed-job callback is ``tdmpc.launcher.FailedJobsCallback``) |
| ``stages`` / ``variants`` / ``provenance`` | the main job's subprocess stages; labelling apart of job variants; the git commit and atomic JSON writes |
| ``experiment`` | the main job (``scripts/experiment.py``): train -> prune sweeps -> report |
| ``report`` / ``stats`` | ``scripts/report.py`` (parts: ``collect``, ``tables``, ``plots``, ``control_rate``, ``importance_report``); rliable statistics |
| ``export`` / ``export_graphs`` / ``deploy_check`` | ``scripts/export.py``: ONNX / pt2 export, the exportable graphs and the closed-loop check |
"""
