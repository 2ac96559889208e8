"""Modules entry scripts import from the Azure ML SDK, provided inside the runtime process only.

This folder (not the package) is put on sys.path before an entry script is imported, so
`from azureml.core.model import Model` and `from azureml.contrib.services.aml_request import rawhttp`
work unchanged. Nothing outside the runtime process imports these.
"""
