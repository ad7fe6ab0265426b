"""Detection and retrieval metrics."""
import numpy as np
import pytest

from fiftyone_ncl.core.metrics import detection_metrics, retrieval_metrics


def test_detection_metrics_perfect_and_reversed():
    noisy = np.array([True, True, False, False, False])
    perfect = np.array([0.1, 0.2, 0.8, 0.9, 0.95])
    m = detection_metrics(noisy, perfect, threshold=0.5)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["precision_at_k"] == 1.0
    assert m["k"] == 2 and m["flagged"] == 2 and m["precision"] == 1.0 and m["recall"] == 1.0
    reversed_ = detection_metrics(noisy, 1 - perfect)
    assert reversed_["auroc"] == 0.0 and reversed_["precision_at_k"] == 0.0


def test_detection_metrics_keep_the_order_of_tiny_confidences():
    # calibrated posteriors deep in the noisy tail are tiny but distinct;
    # ranking by 1 - confidence would round them all to 1.0 and tie them
    noisy = np.array([True, True, False, False])
    confidence = np.array([1e-200, 1e-120, 1e-30, 0.9])
    m = detection_metrics(noisy, confidence, threshold=0.5)
    assert m["auroc"] == 1.0 and m["ap"] == 1.0 and m["precision_at_k"] == 1.0
    assert m["flagged"] == 3 and m["recall"] == 1.0


def test_detection_metrics_one_class_and_shape_errors():
    m = detection_metrics(np.zeros(4, bool), np.linspace(0, 1, 4))
    assert m["auroc"] is None and m["ap"] is None and m["precision_at_k"] is None
    with pytest.raises(ValueError, match="shape"):
        detection_metrics(np.zeros(3, bool), np.zeros(4))


def test_retrieval_metrics_instance_and_class_protocols():
    # 3 images, 2 captions each; caption embeddings point at their image
    img = np.eye(3, dtype=np.float32)
    image_index = np.array([0, 0, 1, 1, 2, 2])
    txt = img[image_index]
    m = retrieval_metrics(img, txt, image_index)
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0 and m["rsum"] == 600.0
    # scramble: caption rows point at the next image -> R@1 = 0 both ways
    txt_wrong = img[(image_index + 1) % 3]
    m = retrieval_metrics(img, txt_wrong, image_index)
    assert m["i2t_r1"] == 0.0 and m["t2i_r1"] == 0.0
    # class protocol: images 0 and 1 share a class, so pointing 0->1 is a hit
    classes_img = np.array([0, 0, 1])
    txt_01 = img[np.array([1, 1, 0, 0, 2, 2])]
    m = retrieval_metrics(img, txt_01, image_index, classes_img, classes_img[image_index])
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 100.0
