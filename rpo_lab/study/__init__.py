"""The study: DPO, RPO variants and KTO compared across seeds and data settings (``rpo-tutorial study``).

Modules: ``settings`` (methods, sizes, fairness rules), ``data`` (the settings' data), ``trunk``
(the frozen-layers fast path), ``train`` (SFT reference and one method's run), ``runner`` (the
cached loop), ``stats`` (intervals), ``report`` (JSON, markdown, figures), ``cli``.
"""
