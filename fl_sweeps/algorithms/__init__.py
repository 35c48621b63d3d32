"""FedAvg algorithms for the ``algorithm`` config group: each option's ``_target_`` is a ``build_*`` function here.

Every builder takes the same keyword arguments (``model_fn``, ``client_optimizer``, ``server_optimizer``,
``broadcast_encoder``, ``aggregate_encoder``) and returns a ``tff.learning.templates.LearningProcess`` whose
hyperparameters (``{"client_work": ..., "finalizer": ...}``) and metrics have the layout the trainer reads.
"""
