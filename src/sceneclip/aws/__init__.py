"""AWS glue: boto3 and Powertools over the core (the Lambda package is errors + core + aws)."""
