"""Jobs: the runs people and sensors start, each selecting assets or running ops."""
