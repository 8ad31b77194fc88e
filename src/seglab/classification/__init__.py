"""Classification as a task of the study pipeline (one label per image): data sources and
verification (:mod:`.sources`, :mod:`.data`), classifiers (:mod:`.models`), losses and
per-epoch scores (:mod:`.losses`), training (:mod:`.train`), evaluation (:mod:`.evaluate`),
the study table (:mod:`.aggregate`), the report (:mod:`.report`) and prediction
(:mod:`.predict`). The stages reach it through :mod:`seglab.tasks.classification`.
"""
