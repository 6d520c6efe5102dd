import pytest

from pipeline.data.labels import NUM_CLASSES, LabelMap, load_label_map


def test_label_map_has_the_1000_ilsvrc_classes_numbered_from_1():
    labels = load_label_map()
    assert len(labels) == NUM_CLASSES == 1000
    # TensorFlow's ImageNet converter numbers the sorted synsets from 1 (0 is background).
    for synset, label in [
        ("n01440764", 1),
        ("n01739381", 60),
        ("n02105855", 231),
        ("n02123045", 282),
        ("n07747607", 951),
        ("n15075141", 1000),
    ]:
        assert labels.label(synset) == label
        assert labels.synset(label) == synset
    assert labels.name(1) == "tench, Tinca tinca"


def test_class_index_is_label_minus_one():
    assert LabelMap.class_index(1) == 0
    assert LabelMap.class_index(1000) == 999
    with pytest.raises(ValueError, match="out of range"):
        LabelMap.class_index(0)


def test_synset_is_the_key_because_names_repeat():
    labels = load_label_map()
    bird, machine = labels.label("n02012849"), labels.label("n03126707")
    assert bird != machine
    assert labels.name(bird).split(",")[0] == labels.name(machine).split(",")[0] == "crane"


def test_unknown_synset_and_out_of_range_labels_are_rejected():
    labels = load_label_map()
    with pytest.raises(KeyError, match="n00000000"):
        labels.label("n00000000")
    for bad in (0, 1001, -1):
        with pytest.raises(ValueError, match="out of range"):
            labels.synset(bad)


def test_a_short_or_unsorted_list_is_refused():
    labels = load_label_map()
    with pytest.raises(ValueError, match="expected 1000"):
        LabelMap(labels.synsets[:-1], labels.names[:-1])
    swapped = (labels.synsets[1], labels.synsets[0], *labels.synsets[2:])
    with pytest.raises(ValueError, match="sorted"):
        LabelMap(swapped, labels.names)
