"""The pure core: rasterio, shapely, numpy (and pystac) only; knows nothing of AWS."""
