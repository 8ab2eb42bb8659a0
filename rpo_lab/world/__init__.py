"""A synthetic preference world where RPO and DPO can be told apart on a CPU (issue 20).

Prompts fall in clusters (a cluster token and a few detail tokens); the true reward r* of a
response depends on the cluster only; clusters in a group share a reward direction. A tiny
transformer reference is trained from scratch by maximum likelihood on responses that do not
encode r*; preference pairs are the best and worst of k reference samples under r*, with
Bradley-Terry label noise on the training side. Hundreds of small policies (methods x seeds x
learning rates) train as ONE stacked model, and every step's loss comes from the library's
``preference_objective``.

Modules (each read in one sitting): ``spec`` (the frozen world and the study design), ``world``
(drawing a world: r*, embeddings, the SFT distribution), ``policy`` (the stacked transformer),
``reference`` (SFT and sampling), ``pairs`` (splits and labelled pairs), ``methods`` (each
method as an RPOConfig), ``optim`` (Adam over stacked models), ``train`` (one stack's training and
evaluation), ``run`` (the cached, two-process study), ``report`` (tables and figures).
"""
