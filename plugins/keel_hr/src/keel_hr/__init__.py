"""Keel plugin keel_hr: the HR master-data sync (job type `hr.sync_directory`); hooks in plugin.py."""

__version__ = "1.0.0"
