"""sceneclip: clip satellite scenes to region boundaries and write verified Cloud Optimized GeoTIFFs."""

__version__ = "0.1.0"
