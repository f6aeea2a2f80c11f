"""The backend side of pfxhttp: request templates, the HTTP/1.1 client and response mapping."""
