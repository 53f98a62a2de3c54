"""Whole paths through fedsynth that several packages take part in (the demo); no CLI code here."""
