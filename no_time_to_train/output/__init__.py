"""What a person looks at: drawing, visualisation panels, per-image exports."""
