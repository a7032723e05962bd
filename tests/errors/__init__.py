"""Hostile and incomplete input, signals: the message a user sees and that nothing is lost."""
