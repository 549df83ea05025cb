"""Deployments: the service the API calls to create, list, update and delete them
(:mod:`.service`), their keys (:mod:`.keys`), their status as their model loads
(:mod:`.status`), their events (:mod:`.events`), and request routing, a chat request's
``model`` to the deployment it runs on (:mod:`.routing`)."""
