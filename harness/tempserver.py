"""A server the tests run from a temp directory of its own: started on entry, stopped and removed on exit."""

import shutil
import tempfile
from pathlib import Path


class TempServer:
    """`start`/`stop` are the subclass's; this keeps its directory, its log and the `with` block."""

    def __init__(self, prefix: str, log_name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.log = self.dir / log_name

    def start(self) -> "TempServer":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()
