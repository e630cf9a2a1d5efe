"""What a direction does: diagnostics (`inspect`), evaluations and PIE-Bench."""
