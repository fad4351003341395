"""Figures, HTML pages and the plots of fitted laws shared by every report (they import matplotlib)."""
