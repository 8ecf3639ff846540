from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0004_generative_models'),
    ]

    operations = [
        migrations.AddField(
            model_name='prediction',
            name='failure',
            field=models.CharField(blank=True, max_length=16),
        ),
    ]
