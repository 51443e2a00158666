"""Start and stop the local servers (VoIPstudio sandbox, SeaweedFS S3) for tests and the demo."""

from voipstudio_devstack.processes import ManagedProcess, free_port
from voipstudio_devstack.sandbox import SandboxServer
from voipstudio_devstack.seaweedfs import SeaweedS3

__all__ = ["ManagedProcess", "SandboxServer", "SeaweedS3", "free_port"]
