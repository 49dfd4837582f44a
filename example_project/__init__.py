"""A merchant's Django project that keeps its refunds at 慧收钱 (HSQ) in sync with ``hsq_refunds``.

``python -m example_project.demo`` shows refunds applied for, notified by HSQ and synced, from
start to end; ``python -m example_project.serve`` runs the admin, the sandbox gateway and the
django-q2 cluster.
"""
