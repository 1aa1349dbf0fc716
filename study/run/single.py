"""`kd-study train CONFIG.yaml`: one trial config trained outside Tune, with the checks and assets a study's trials get.

Apart from the runner: no study folder, search or MLflow parent run, only the same preflight, Ray
session and shared assets before `trainables.train.trial.run_trial`. Light to import, like the runner.
"""
from __future__ import annotations

from pathlib import Path

from trainables.config import ConfigError, TrialConfig

from study.run.assets import assets_line, teacher_progress
from study.run.preflight import check_ray_address, check_trial_inputs
from study.run.ray_session import check_fits_local_ray, driver_session, trial_cpus
from study.run.runner import StudyOptions


def train_single(config_path: str | Path, opts: StudyOptions, *, name: str | None = None,
                 output_dir: str | None = None):
    """`kd-study train CONFIG.yaml`: prepare assets and run one trial outside Tune; returns its TrialResult."""
    from trainables.config import absolute_paths

    cfg = TrialConfig.from_yaml(config_path)
    overrides = {k: v for k, v in (("name", name), ("output_dir", output_dir)) if v is not None}
    cfg = absolute_paths(cfg.with_overrides(overrides, source=str(config_path)) if overrides else cfg)
    check_fits_local_ray(trial_cpus(cfg), opts.num_cpus, opts.ray_address, str(config_path))
    check_ray_address(opts.ray_address)
    checked = check_trial_inputs(cfg, config_path)
    with driver_session(opts.ray_address, opts.num_cpus) as ray:
        from trainables.prepare.assets import prepare_assets
        from trainables.samplers import check_k_fits_pool
        from trainables.train.trial import run_trial

        from study.console.progress import train_progress

        needed, gpus = trial_cpus(cfg)
        have = ray.cluster_resources()
        if not opts.ray_address and (needed > have.get("CPU", 0) or gpus > have.get("GPU", 0)):
            raise ConfigError(f"the trial needs {needed:g} CPUs and {gpus:g} GPUs but Ray has "
                             f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs (resources.*)")
        opts.say(f"kd-study: preparing shared assets in {cfg.cache_dir} ...")
        assets = prepare_assets(cfg, data=checked.train, on_teacher_progress=teacher_progress(opts.say))
        opts.say(assets_line(assets.stats))
        check_k_fits_pool(cfg.sampler.k, assets.stats.get("pool_size_min"), cfg.sampler.on_small_pool,
                          where=f"{config_path}: sampler.k")
        opts.say(f"kd-study: training {cfg.name} → {Path(cfg.output_dir) / cfg.name}")
        try:
            with train_progress(cfg, assets.stats.get("n_train_queries"), enabled=opts.verbose > 0):  # not --quiet
                return cfg, run_trial(cfg, assets, storage_path=cfg.output_dir, name=cfg.name)
        except SystemExit:
            # Ray Train's own Ctrl-C handler (installed by fit) aborts the run, then exits 0: an
            # interrupt, not a success. The run folder keeps its checkpoints; the CLI says how to continue.
            raise KeyboardInterrupt from None
