"""pfxhttp: answer Postfix socketmap and policy-delegation requests from HTTP/JSON APIs."""

__version__ = "0.1.0"
