"""The Goal Agility app's mechanism (app definitions in app_definitions/goal_agility/)."""
