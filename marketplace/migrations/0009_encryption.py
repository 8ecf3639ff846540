from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0008_model_queue"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="file_key",
            field=models.CharField(blank=True, default="", editable=False, max_length=128),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="tokenizer_key",
            field=models.CharField(blank=True, default="", editable=False, max_length=128),
        ),
    ]
