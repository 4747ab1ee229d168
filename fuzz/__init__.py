"""Fuzzing harnesses (atheris): ``make fuzz`` runs them; see RELIABILITY.md."""
