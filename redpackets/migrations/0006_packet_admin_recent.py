# The admin's packet list, newest first.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('redpackets', '0005_split_and_passphrase_guards'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='packet',
            index=models.Index(fields=['-created_at'], name='packet_recent'),
        ),
    ]
