"""The trustgate scheduler extender: kube-scheduler's filter and prioritize verbs over trust reports.

`wire` decodes and encodes the `k8s.io/kube-scheduler/extender/v1` types, `filter` decides, `app`
is the Flask app (`create_app`), `main` the `trustgate-extender` entry point.
"""
