"""Recording a debugged run as it goes (gdb's ``record full``, rr-style).

The plugin is armed when the first run starts (arming needs the vCPU running) and
stays armed while the debugger stops and resumes the CPU through the gdbstub, and
from run to run (``clear`` empties the log at each start); at a stop ``sync`` makes
the plugin write out what it holds, so the log describes every BPF instruction
executed up to the stop. The debugger's end disarms it.
"""

from __future__ import annotations

from qstep.errors import GuestError, QstepError
from qstep.loaded import LoadedProgram
from qstep.recorder.control import DEFAULT_LIMIT, RecorderControl, RecordingTooLarge
from qstep.recorder.log import parse_log
from qstep.recorder.recording import Recording, build_recording
from qstep.recorder.run import boundaries, jit_ranges
from qstep.session import Session


class LiveRecorder:
    """Arms the recorder for each run of one program and reads it at stops."""

    def __init__(self, session: Session, prog: LoadedProgram, limit: int = DEFAULT_LIMIT
                 ) -> None:
        machine = session.machine
        assert machine is not None and machine.config is not None
        self.session = session
        self.prog = prog
        self.limit = limit
        self.enabled = True  # arm at the start of the next run
        self.armed = False
        self.problem: str | None = None  # why this run's recording cannot be used
        self._socket = machine.config.recorder_socket
        self._log = machine.config.recorder_log
        self._control: RecorderControl | None = None
        self._size = -1
        self._recording: Recording | None = None

    @property
    def needs_running_vcpu(self) -> bool:
        """``start`` arms the plugin, which needs the vCPU running."""
        return self.enabled and not self.armed

    def start(self) -> None:
        """Start recording a run about to start: the plugin stays armed from one run to
        the next (the program's code does not change) and only its log starts again
        (paused after 'record stop'); arming, at the first run, needs the vCPU running."""
        self.problem, self._size, self._recording = None, -1, None
        if self.armed and self._control is not None:
            self._control.clear()
            self._control.pause(not self.enabled)
            return
        if not self.enabled:
            return
        self._control = RecorderControl(self._socket, self.session.hello)
        try:
            self._control.arm(jit_ranges(self.prog), boundaries(self.prog), self.limit)
        except QstepError:
            self.close()
            raise
        self.armed = True

    def record_here(self) -> bool:
        """``record`` at a stop: record from this point of the run (an empty log, logging
        on); False when the plugin is not armed (recording starts with the next run)."""
        self.enabled = True
        if not self.armed or self._control is None:
            return False
        self._control.clear()
        self._control.pause(False)
        self.problem, self._size, self._recording = None, -1, None
        return True

    def stop(self) -> None:
        """Disarm (the vCPU must be running) and close the channel, so other users of
        the plugin (it serves one client at a time) can have it."""
        if self._control is None:
            return
        try:
            if self.armed:
                self._control.disarm(self.limit)
        except RecordingTooLarge:
            self.problem = self.too_large()
        finally:
            self.close()

    def discard(self) -> None:
        """``record stop``: no history for this run, nothing logged from now on, no later
        run recorded (the plugin stays armed, paused, for a later 'record')."""
        self.enabled = False
        self._recording = None
        if self.armed and self._control is not None:
            self._control.pause(True)
        self.problem = "recording was stopped ('record stop'); 'record' records from there on"

    def too_large(self) -> str:
        return (f"the recording reached its size limit ({self.limit} bytes) and stopped, so "
                "this run cannot be gone back through; raise --record-limit")

    def recording(self) -> Recording | None:
        """Every instruction executed so far in this run (None with ``problem`` set)."""
        if self.problem is not None or not self.armed or self._control is None:
            return None
        size, overflow = self._control.sync()
        if overflow:
            self.problem = self.too_large()
            return None
        if size != self._size:
            data = self._log.read_bytes()[:size]
            try:
                self._recording = build_recording(self.prog, parse_log(data), 0)
            except GuestError as err:
                self.problem = f"the recording cannot be read: {err}"
                return None
            self._size = size
        return self._recording

    def close(self) -> None:
        """Drop the channel; a plugin left armed disarms itself when the host goes."""
        if self._control is not None:
            self._control.close()
            self._control = None
        self.armed = False
