"""runalert."""
