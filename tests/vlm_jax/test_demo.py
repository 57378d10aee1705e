"""The README's default run works offline end to end."""

from vlm_jax import demo


def test_demo_runs_offline(capsys):
  assert demo.main([]) == 0
  out = capsys.readouterr().out
  assert "top-5 next tokens" in out
  assert "image grid [ 1 22 28]" in out  # 392x308 -> smart_resize 392x308 -> 28x22 patches
