"""The edge: what the mesh exposes to callers outside it (see the README, "Exposing routes").

* :mod:`meshware.edge.nginx` renders an nginx DMZ configuration for the public routes;
* :mod:`meshware.edge.proxy` is a local router (``meshware proxy``) for callers that are not
  Python, optionally public-only;
* :mod:`meshware.edge.public` decides what is public and which request targets are refused.
"""
