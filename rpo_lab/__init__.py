"""rpo_lab: what uses the rpo_tutorial library (tutorial plumbing, demo, study, CLI); the library never imports it."""
