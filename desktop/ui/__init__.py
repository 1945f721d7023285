"""The Qt desktop window. Nothing here runs model code on the GUI thread."""
