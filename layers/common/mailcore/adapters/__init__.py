"""One adapter module per AWS service, each class implementing a port of mailcore.ports on the
shared base (adapters/base.py: the process's client of the service, made on first use). Only this
package imports boto3 or botocore (tests/unit/test_layer_imports.py holds it so)."""
