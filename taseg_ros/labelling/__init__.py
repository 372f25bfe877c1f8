"""The labelling loop for a user's own recordings: choose the frames worth labelling
(``select``: ``taseg bag select``), and round-trip the model's pre-labels through CVAT
(``cvat``: ``taseg label export`` / ``taseg label import``)."""
