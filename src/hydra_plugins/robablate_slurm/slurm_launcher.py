"""The SLURM launcher of `hydra/launcher=slurm`: hydra-submitit-launcher's, waiting for every job.

Upstream waits for the jobs in order and raises at the first failed one, so the sweep's output names
one failure, not which arm or where its log is, and stops waiting for the others. Here a job whose
task fails (an exception, or `sys.exit(2)` from a user error) returns a failed JobReturn naming the
job, its overrides and its SLURM log; once every job has ended the sweep raises one error listing all
failed jobs. Requeue on timeout is upstream's (submitit owns it: `checkpoint()` resubmits the job with
the same overrides; docs/sweeps.md).
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _UpstreamSlurmLauncher


class SweepJobFailed(RuntimeError):
    """One job of a SLURM sweep failed; the message names the job, its overrides and its log."""


class SlurmLauncher(_UpstreamSlurmLauncher):
    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:  # runs inside the SLURM job
        import submitit

        self._requeued = False
        error: BaseException | None = None
        try:
            ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
            if ret.status == JobStatus.FAILED:
                error = ret._return_value
        except SystemExit as e:  # run.py exits 2 on a user error (robablate.pipeline.main)
            if not e.code or self._requeued:  # submitit exits after requeueing: not a failure
                raise
            error, ret = e, JobReturn(overrides=list(sweep_overrides))
        if error is None:
            return ret
        env = submitit.JobEnvironment()
        what = f"exit code {error.code}" if isinstance(error, SystemExit) else f"{type(error).__name__}: {error}"
        if not isinstance(error, SystemExit):  # a user error was already printed as one paragraph
            traceback.print_exception(error, file=sys.stderr)
        ret.status = JobStatus.FAILED
        ret._return_value = SweepJobFailed(
            f"job #{job_num} (SLURM job {env.job_id}: {' '.join(sweep_overrides)}) failed with {what}; "
            f"log: {env.paths.stderr}")
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:  # submitit calls it on the timeout signal
        self._requeued = True
        return super().checkpoint(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        results = super().launch(job_overrides, initial_job_idx)
        failed = [r._return_value for r in results if r.status == JobStatus.FAILED]
        if failed:
            raise SweepJobFailed(f"{len(failed)} of {len(results)} jobs failed (the others finished):\n"
                                 + "\n".join(f"  {e}" for e in failed))
        return results

