"""A timm model's ImageNet weights come from a local file named by ``pretrained``."""

import timm
import torch

from shiftbench.plugins.registry import dataset_class, objective_class


def test_pretrained_file_initializes_the_body_and_keeps_a_fresh_head(tmp_path, one_torch_thread):
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    data = dataset_class("shifted_digits").get_instance().get_data()["data"]
    models = {}
    for pretrained in ("none", str(path)):
        objective = objective_class().get_instance(model="resnet18", pretrained=pretrained)
        objective.device = "cpu"
        objective.set_data(data)
        models[pretrained] = objective.build_model()
    loaded, scratch = models[str(path)], models["none"]
    x = torch.rand(2, 3, 32, 32)
    # the body computes the source's features (its batch norms folded in, as Naganuma et al.)
    features = source.eval().forward_features(x)
    assert torch.allclose(loaded.eval().forward_features(x), features, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(scratch.eval().forward_features(x), features, rtol=1e-2, atol=1e-3)
    assert loaded.fc.weight.shape == (10, 512)
