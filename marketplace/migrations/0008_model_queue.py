import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('marketplace', '0007_version_optimization'),
    ]

    operations = [
        migrations.AddField(
            model_name='model',
            name='queue',
            field=models.CharField(blank=True, default='', help_text='The worker pool (Celery queue) that validates and runs this model; blank for the default.', max_length=64, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9][A-Za-z0-9_.-]*$', "Letters, digits, '.', '_' and '-', starting with a letter or digit.")]),
        ),
    ]
