"""fdoverlap: replay and profile the overlapped execute_model of FastDeploy's GPU model runner."""

__version__ = "0.1.0"
