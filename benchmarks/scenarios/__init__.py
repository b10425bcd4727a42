"""The peer benchmark's scenarios: each module has ``scenarios(context) -> list[Scenario]``."""
