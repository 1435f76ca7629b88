"""What every launcher's run answers when it ends (see the package docstring)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ended:
    """How an engine's run ended: its exit status, and whether the cluster took it away (preempted, its node
    failed, its time ran out) rather than the engine ending by itself; such a run resumes from its last
    checkpoint. `state` is the scheduler's word for it."""

    returncode: int
    interrupted: bool = False
    state: str = ""
