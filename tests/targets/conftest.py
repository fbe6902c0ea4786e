from scanner.lab.pytest_plugin import lab_guest, start_lab_guest

__all__ = ["lab_guest", "start_lab_guest"]
