"""`karyosearch serve`: the HTTP API and the web page (see `app.create_app`)."""
