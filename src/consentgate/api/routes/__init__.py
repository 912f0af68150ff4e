"""The API's routes, one module per audience. Each route is thin: parse, authorise
(`guard`), call the library, render."""
