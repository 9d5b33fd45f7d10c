"""OCR workload (issue 16): the application on the SDK and its fleet benchmark."""
