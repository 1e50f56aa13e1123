"""Image folders: layout, validation, stratified splits, datasets and the demo data."""
