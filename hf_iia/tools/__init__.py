"""Tools built on :class:`hf_iia.IIAExplainer`: the command line, the audit, the benchmark, the synthetic data and
the offline demo. The core (``hf_iia`` outside this folder) never imports a tool."""
