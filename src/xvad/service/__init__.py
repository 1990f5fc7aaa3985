"""``xvad serve``: one service watches many cameras with one shared model, keeps every alert in a
database (:mod:`.store`) and serves them over an authenticated HTTP API; :mod:`.settings` is its
configuration and :mod:`.auth` its users and API tokens."""
