"""EligibilityReport → what people and systems read: JSON, a text table, a CDS Hooks card."""
